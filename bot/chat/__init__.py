"""The chat service: accept -> queue -> fit -> stream -> finish; the fair queue, limits,
context fitting, resume after a restart, and the service's background deliveries.
"""
