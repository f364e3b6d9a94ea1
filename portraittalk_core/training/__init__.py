"""Training PortraitTalk: one stage class a stage (stages.py), the trainer around them, their data, masks and
losses, and the demo recipe; the shards it reads are prepared by data/ (data/prepare.py, data/shards.py)."""
