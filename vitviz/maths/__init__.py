"""Pure maths over attention, tokens and embeddings: the numbers behind every figure."""
