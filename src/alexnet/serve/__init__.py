"""``alexnet serve``: a web page and a JSON API over a trained classifier (the ``serve`` extra)."""
