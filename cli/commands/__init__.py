"""The commands, one module per command or small family. Each parses its options, calls
the library and prints; cli/main.py registers them."""
