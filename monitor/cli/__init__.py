"""The command line: `telemon` and its subcommands, the embedded broker and the demo."""
