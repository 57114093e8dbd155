"""dli_perception: see, label, learn, classify and react on a ROS 2 robot.

The ``core`` subpackage holds everything that does not need a ROS graph
(image conversion, preprocessing, datasets, training, inference); ``nodes``
holds the thin rclpy wrappers around it.
"""

__version__ = "0.1.0"
