"""The gate and the executor offered to other agents over the Model Context Protocol."""
