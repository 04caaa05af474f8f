"""qwenchat: chat with a local Qwen2/Qwen2.5 model from the terminal.

Importing this package stays cheap: torch and textual are imported only by the commands
that need them.
"""

__version__ = "0.1.0"
