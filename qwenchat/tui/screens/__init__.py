"""Modal screens: help, settings (sampling), system prompt and presets, model picker, dialogs."""
