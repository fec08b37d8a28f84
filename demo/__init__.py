"""``trackbridge demo``: a receiver in-process and N small torch training clients as processes,
logging into an embedded MLflow store. Its client side (``demo.train``) uses only the Writer.
"""
