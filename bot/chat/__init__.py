"""The chat service: accept -> queue (service.py), then the workers: fit -> stream -> finish
-> show (workers.py, deliveries.py); the fair queue, limits, context fitting, resume after a
restart.
"""
