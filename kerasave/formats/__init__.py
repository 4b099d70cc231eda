"""One module per format; ``kerasave._registry`` maps names and suffixes to their handlers."""
