"""respline's engine: sans-I/O translation between the Responses API and upstream providers.

Nothing in this package touches a socket, a file or a clock it was not handed; the adapters
package does the I/O and drives these objects.
"""
