"""Object priors: where the inspected object lies in each image."""
