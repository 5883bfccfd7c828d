"""The `hatch-vlm` subcommands that have their own module (`register(subparsers)` each), wired by
`hatch_vlm.cli`: the command-line layer, above everything it reaches (tests/test_layers.py)."""
