"""Writers shaped like the trackers of training frameworks, logging through the receiver."""
