"""classseg: classify brain MRI slices (tumor / no tumor) and outline the tumor.

A Keras 3 / TensorFlow toolkit reproducing and extending the Class-Seg pipeline of
Duong-Trung et al. (frozen ImageNet classifier gate + ResUNet segmenter) and the joint
multi-task model of the seed papers, on the LGG MRI Segmentation dataset.
"""

__version__ = "0.1.0"
