"""A tiny Flower app (a ServerApp and a ClientApp) that logs through trackbridge."""
