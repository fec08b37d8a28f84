"""The live view: the hub of every client's recent state, its web page (HTTP, Server-Sent
Events), ``/metrics`` and the Watch RPC that ``trackbridge top`` and ``tail`` read.
"""
