"""Building the four models and the forward passes the trainer needs from them."""
