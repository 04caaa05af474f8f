"""The chat's settings dialogs: sampling (this conversation's own settings over the defaults)
and the system prompt with its presets.

`ChatSettings` is a base of `ChatScreen` (screens/chat.py), which provides `session`, `store`,
`chatlog` and `_no_session()`.
"""

from __future__ import annotations

from dataclasses import replace

from textual import work
from textual.screen import Screen

from qwenchat.tui.screens.settings import FIELDS, SettingsScreen
from qwenchat.tui.screens.system_prompt import SystemPromptScreen


class ChatSettings(Screen[None]):
    @work
    async def action_settings(self) -> None:
        if self._no_session():
            return
        s = self.session
        options, defaults = s.options, s.defaults
        # a field shows a value only where this chat differs from the defaults (empty = default)
        current = {f: getattr(options, f) if getattr(options, f) != getattr(defaults, f) else None for f in FIELDS}
        values = await self.app.push_screen_wait(SettingsScreen(current, {f: getattr(defaults, f) for f in FIELDS},
                                                                s.model_info.server))
        if values is None:
            return
        base = s.base_options  # an emptied field: back to the flags / config file value, if any
        chosen = {f: v if v is not None else getattr(base, f) for f, v in values.items()}
        try:
            s.set_options(replace(options, **chosen))
        except Exception as e:  # the engine's own validation: nothing was changed
            self.app.show_error(e, "Setting refused")
            return
        self.notify("Sampling settings saved for this conversation")
        self.update_status()  # shows JSON output while it is on

    @work
    async def action_system_prompt(self) -> None:
        if self._no_session():
            return
        text = await self.app.push_screen_wait(SystemPromptScreen(self.store, self.session.system_prompt))
        if text is not None:
            try:
                self.session.set_system_prompt(text or None)
            except Exception as e:
                return self.app.show_error(e)
            await self.chatlog.set_system_prompt(self.session.system_prompt)
            self.notify("System prompt cleared" if not text else "System prompt set for this conversation")
