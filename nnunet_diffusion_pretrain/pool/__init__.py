"""Stage 1, the unlabeled pool: reading unlabeled scans (formats, orientation, HU windows), checking
that they are the labelled data's kind of image, preprocessing them with the dataset's own plans,
and the derived datasets and image sets built from nnU-Net datasets."""
