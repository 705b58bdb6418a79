"""The core every layer may import: settings, errors, logging and its scrubber, the warehouse."""
