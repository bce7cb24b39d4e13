"""Pure resolution of a recipe into a plan: batch numbers, configs, command lines, estimates."""
