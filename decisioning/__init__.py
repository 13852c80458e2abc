"""The pure decision core: validation, rules, outcome and trace. No Flink, no I/O."""
