package metrics

import "github.com/prometheus/procfs"

// platformProcessReader reads /proc/self/stat through procfs.
func platformProcessReader() readProcessFunc {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil
	}
	return func() (processReading, error) {
		p, err := fs.Self()
		if err != nil {
			return processReading{}, err
		}
		st, err := p.Stat()
		if err != nil {
			return processReading{}, err
		}
		return processReading{cpuSeconds: st.CPUTime(), rssBytes: float64(st.ResidentMemory())}, nil
	}
}
