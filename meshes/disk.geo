// Disk centred at (0.5, 0.5), radius 0.5 (fits the unit-square grid). Run meshes/generate.py.
// Tags: 1 domain; 2 boundary.
lc = 0.045;
Point(1) = {0.5, 0.5, 0, lc};
Point(2) = {1.0, 0.5, 0, lc};
Point(3) = {0.5, 1.0, 0, lc};
Point(4) = {0.0, 0.5, 0, lc};
Point(5) = {0.5, 0.0, 0, lc};
Circle(1) = {2, 1, 3};
Circle(2) = {3, 1, 4};
Circle(3) = {4, 1, 5};
Circle(4) = {5, 1, 2};
Curve Loop(1) = {1, 2, 3, 4};
Plane Surface(1) = {1};
Physical Surface("domain", 1) = {1};
Physical Curve("boundary", 2) = {1, 2, 3, 4};
