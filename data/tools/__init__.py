"""Command-line tools over converted data: `python -m data.tools.preview`, `python -m data.tools.smoke`."""
