"""Forward passes: the functions that run a model on a view and hand `vitviz.maths` the arrays it reads."""
