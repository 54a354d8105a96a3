// Plate [0,2]x[0,1] with two circular holes (centres (0.6,0.5), (1.4,0.5), radius 0.2).
// Tags: 1 domain; 2 left (x=0); 3 right (x=2); 4 top_bottom; 5 holes. Run meshes/generate.py.
lc = 0.06;
lh = 0.035;
Point(1) = {0, 0, 0, lc};
Point(2) = {2, 0, 0, lc};
Point(3) = {2, 1, 0, lc};
Point(4) = {0, 1, 0, lc};
Line(1) = {1, 2};
Line(2) = {2, 3};
Line(3) = {3, 4};
Line(4) = {4, 1};
// hole 1
Point(10) = {0.6, 0.5, 0, lh};
Point(11) = {0.8, 0.5, 0, lh};
Point(12) = {0.6, 0.7, 0, lh};
Point(13) = {0.4, 0.5, 0, lh};
Point(14) = {0.6, 0.3, 0, lh};
Circle(11) = {11, 10, 12};
Circle(12) = {12, 10, 13};
Circle(13) = {13, 10, 14};
Circle(14) = {14, 10, 11};
// hole 2
Point(20) = {1.4, 0.5, 0, lh};
Point(21) = {1.6, 0.5, 0, lh};
Point(22) = {1.4, 0.7, 0, lh};
Point(23) = {1.2, 0.5, 0, lh};
Point(24) = {1.4, 0.3, 0, lh};
Circle(21) = {21, 20, 22};
Circle(22) = {22, 20, 23};
Circle(23) = {23, 20, 24};
Circle(24) = {24, 20, 21};
Curve Loop(1) = {1, 2, 3, 4};
Curve Loop(2) = {11, 12, 13, 14};
Curve Loop(3) = {21, 22, 23, 24};
Plane Surface(1) = {1, 2, 3};
Physical Surface("domain", 1) = {1};
Physical Curve("left", 2) = {4};
Physical Curve("right", 3) = {2};
Physical Curve("top_bottom", 4) = {1, 3};
Physical Curve("holes", 5) = {11, 12, 13, 14, 21, 22, 23, 24};
