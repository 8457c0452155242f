"""Experimental second-order, element-wise and projection modules, as transforms."""
