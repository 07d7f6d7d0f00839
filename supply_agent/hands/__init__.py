"""The hands: the runtime the graph acts through (reads with the reader, writes only through the guarded
executor), the world as read from the cluster, and the wiring of real clients."""
