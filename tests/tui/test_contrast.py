"""The high-contrast theme meets WCAG AA where the user looks: every character on the rendered
screen (chat, sidebar, status bar, footer, a dialog) against its own background, dimmed text
as the terminal shows it: 4.5:1 for text, 3:1 for borders (WCAG 2.1, 1.4.3 and 1.4.11)."""

from __future__ import annotations

from tests.tui.conftest import wait_for
from tests.tui.helpers import make_app, ready, send

BORDER_CHARS = set("─│╭╮╰╯▕▏━┃▊▎▌▐▀▄█┏┓┗┛═║╔╗╚╝ ")
# The one-eighth-cell edges of a "tall" button border shade the button's own background; the
# button is told apart by its background and label (checked), and in this theme by an edge
# drawn in $border-blurred against the screen.
SHADING = set("▔▁ ")


def luminance(rgb: tuple[int, int, int]) -> float:
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_formula():
    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast((118, 118, 118), (255, 255, 255)), 2) == 4.54  # the classic AA grey


def failures(app, region=None) -> list[str]:
    """Every character (in `region`, if given) whose colour is too close to its background."""
    from rich.cells import cell_len

    out = []
    update = app.screen._compositor.render_full_update()
    for y, line in enumerate(update.strips):
        x = 0
        for strip in line:
            for seg in strip:
                start, x = x, x + cell_len(seg.text)
                text, style = seg.text.strip(), seg.style
                if region is not None and not (region.y <= y < region.bottom and region.x <= start < region.right):
                    continue
                if not text or set(text) <= SHADING or style is None or style.color is None or style.bgcolor is None:
                    continue
                fg, bg = tuple(style.color.get_truecolor()), tuple(style.bgcolor.get_truecolor())
                if style.dim:  # as Textual draws dim text: halfway to the background
                    fg = tuple((f + b) // 2 for f, b in zip(fg, bg))
                need = 3.0 if set(text) <= BORDER_CHARS else 4.5
                ratio = contrast(fg, bg)
                if ratio < need:
                    out.append(f"row {y}: {text[:30]!r} {fg} on {bg}: {ratio:.2f} < {need}")
    return out


async def test_high_contrast_theme_meets_wcag_aa(store):
    app, _ = make_app(theme="qwenchat-high-contrast", max_new_tokens=4,
                      script=["Here is code:\n```python\nx = 1\n```\nand more words after it"])
    async with app.run_test(size=(110, 34)) as pilot:
        await ready(pilot)
        app.session.set_system_prompt("Be brief.")
        await send(pilot, "a question")  # a cut reply: the status line under it too
        await app.chat.show_conversation()
        app.chat.mark_cut_replies()
        app.chat.chatlog.views[0].focus()
        await pilot.pause(0.3)
        bad = failures(app)
        assert bad == [], "\n".join(bad)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is not app.chat)
        app.screen.query_one("#top_p").value = "2"  # an error line
        await pilot.pause(0.3)
        bad = failures(app, app.screen.query_one("SettingsScreen > Vertical").region)  # behind it: dimmed on purpose
        assert bad == [], "\n".join(bad)
