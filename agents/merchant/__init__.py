"""A merchant's payment system: an external client of the card issuer (seed 003 seller server 400)."""
