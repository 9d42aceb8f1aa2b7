"""Command-line entry points: mmxai-synth (and later mmxai-train, mmxai-explain, mmxai-evaluate)."""
