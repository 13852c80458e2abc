"""rtd: real-time decisions on PyFlink. The CLI, on top of the project's other packages;
nothing below imports it, and the Flink workers do not ship it."""
