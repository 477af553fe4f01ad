"""What the Present page's tests expect to see: the story's slide titles, in order."""

SLIDE_TITLES = [
    "An image goes in",
    "Cut into patches",
    "Patches become tokens",
    "Attention, layer by layer",
    "Attention rollout",
    "The prediction",
    "ViT vs CNN",
]
