"""Processing a closed window, as stages that pass values, composed by the processor."""
