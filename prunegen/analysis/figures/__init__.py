"""The figures: `style` (their shared look), `claims` and `methods` (one function per
figure), `draw` (the registry of figures by name, drawing and saving)."""
