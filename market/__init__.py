"""The market service: OHLCV bars of many symbols and the replay clock over them."""
