"""The user's objects: `function`, `grad` / `value_and_grad` / `check_grad`, `train_step`,
`load`, and the thread count. The API wires the compiler (imported on first compile) and the
runtime together."""
