"""The training engine (Lightning). Imported only by commands that train: Lightning takes seconds to load."""
