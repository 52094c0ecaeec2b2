"""Pure data of whenflow: definitions, executions, states, events, errors.

Nothing here does I/O or imports another layer; every other layer imports it.
"""
