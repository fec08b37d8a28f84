"""Securing the gRPC port: TLS and mutual TLS, client tokens, the auth interceptor, per-client
limits (size, rate, calls in flight) and admission of each batch.
"""
