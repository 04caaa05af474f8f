"""qwenchat: chat with a local Qwen2/Qwen2.5 model from the terminal.

Importing this package stays cheap: torch and textual are imported only by the commands
that need them.
"""

__version__ = "0.1.0"

from qwenchat import early_signals as _early_signals

_early_signals.install()  # Ctrl+C while the command's modules import: a note, not a traceback
