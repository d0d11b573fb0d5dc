# plot.gp - the ratios of one or more benchmark runs, with their targets.
#   gnuplot -e "out='plot.png'; data='joined.dat'; labels='generic avx2'" plot.gp
# data (tab-separated, from run.sh): name, target, then one ratio per run
# ("NaN" where a run lacks the figure). A ratio above its target is good for
# ">=" targets; below it for "<=".
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
set datafile missing "NaN"
set bmargin 16
set lmargin 16
plot for [i=1:words(labels)] data using (column(i + 2)):xtic(1) title word(labels, i), \
     data using 0:2 with points pt 13 ps 2 lc rgb "#d65f5f" title "target"
