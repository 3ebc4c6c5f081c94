"""The miniature world: procedural 64x64 portraits, their attributes, styles and captions."""
