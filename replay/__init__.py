"""Replay: `transactions` history -> point-in-time training rows, and the skew proof."""
