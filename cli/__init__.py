"""Command-line plumbing shared by every entry point (trainer.main, data.tools.*): config files and their
`--config.key=value` overrides, checked before absl parses them."""
