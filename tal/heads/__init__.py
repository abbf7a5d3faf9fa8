"""Classifier heads for tasks: the predicted head's calibration, the discriminant head fitted in
closed form to a task's labelled images, and which head a request gets."""
