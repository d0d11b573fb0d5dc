# plot.gp - the ratios of one or two benchmark runs, with their targets.
#   gnuplot -e "out='plot.png'; a='results/generic/ratios.dat'; la='generic'; b=''; lb=''" plot.gp
# A ratio above its target is good for ">=" targets; below it for "<=".
set terminal pngcairo size 1400,760 noenhanced font ",10"
set output out
set title "faiss-proxy: measured ratios (bars) and targets (diamonds), one run on one machine"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by 35 right
set ylabel "ratio (x)"
set logscale y 2
set yrange [0.01:16]
set grid ytics
set key top left
set datafile separator "\t"
set bmargin 16
set lmargin 16
if (b eq '') {
    plot a using 2:xtic(1) title la lc rgb "#4878d0", \
         a using 0:3 with points pt 13 ps 2 lc rgb "#d65f5f" title "target"
} else {
    plot a using 2:xtic(1) title la lc rgb "#4878d0", \
         b using 2 title lb lc rgb "#ee854a", \
         a using 0:3 with points pt 13 ps 2 lc rgb "#d65f5f" title "target"
}
