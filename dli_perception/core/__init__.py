"""ROS-free core of dli_perception. Nothing under this package imports rclpy."""
