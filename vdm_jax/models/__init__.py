"""Networks: the factorized space-time video U-Net and its parts."""
