"""What a trained network learned, as pictures and arrays: first-layer kernels (the paper's Figure 3),
Grad-CAM heatmaps, nearest neighbours in feature space (Figure 4), and features from any named layer."""
