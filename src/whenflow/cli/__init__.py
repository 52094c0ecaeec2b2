"""The `whenflow` command (typer + rich); imports layers lazily, per command."""
