"""Training PortraitTalk: masks and losses (this package grows with data preparation and the trainer)."""
