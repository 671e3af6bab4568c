# -*- coding: utf-8 -*-
"""
@article{SanchezGarcia2018,
title = "Deep Consensus, a deep learning-based approach for particle pruning in cryo-electron microscopy",
author = "Sanchez-Garcia, Ruben and Segura, Joan and Maluenda, David and Carazo, Jose Maria and Sorzano, Carlos Oscar S.",
journal = "IUCrJ",
volume = "5",
number = "6",
pages = "854--865",
year = "2018",
doi = "http://doi.org/10.1107/S2052252518014392"
}
"""
