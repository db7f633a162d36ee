"""Pure figure factories: a Table (or plain data) in, a plotly Figure out. No widgets, no computation
beyond layout."""
